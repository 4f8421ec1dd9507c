WHO = "only in layer_a"
