"""The Textual studio. app.py: the shell (panes, keys, shared state, the training worker); workspace.py: the
open dataset and the mask settings, UI-free; panes/: one module per tab; widgets/: reusable pieces;
screens/: help, open dataset; commands.py: the palette; messages.py; errors.py: exceptions as one line."""
