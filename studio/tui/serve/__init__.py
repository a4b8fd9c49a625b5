"""`studio serve`: the studio in the browser for a workshop, on top of textual-serve (one studio process per visitor).

sessions.py: how many visitors at once, their share of the cores, their folders (no web code);
server.py: the web server (the token, the cap, a process per websocket, ended with its tab).
"""
