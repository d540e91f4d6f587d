"""HTTP handlers: thin, each parses the request, makes one store call and answers."""
