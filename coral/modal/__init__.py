"""The Modal backend: the app, the code its containers run, and the launcher that scales them."""
