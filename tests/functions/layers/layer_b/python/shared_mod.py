WHO = "layer_b"
