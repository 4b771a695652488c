"""The data a run learns from: datasets, the splits a config selects, each sense's declaration, augmentation, and the teacher's paired stream."""
