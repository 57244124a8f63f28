"""What crosses the process boundary: the record layout, the wire format, the channel."""
