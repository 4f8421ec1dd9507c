def handler(event):
    """One-parameter handlers work too: the event comes back unchanged."""
    return event
