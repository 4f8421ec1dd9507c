WHO = "layer_a"
