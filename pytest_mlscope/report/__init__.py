"""Reports of a session's results: the terminal table now; markdown and HTML to come."""
