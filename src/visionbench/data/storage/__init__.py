"""How samples are read: decoded from their files, or from the uint8 cache; atomic writes."""
