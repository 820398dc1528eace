"""Stage 3: weakly supervised DRAEM and DeSTSeg detectors, anomaly synthesis, training, export."""
