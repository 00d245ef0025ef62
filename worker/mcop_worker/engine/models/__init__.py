"""Models: how normals become log-price paths on the instrument's dates (one module each)."""
