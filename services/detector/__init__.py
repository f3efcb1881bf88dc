"""Face detection (MTCNN), photo decoding helpers and the crop/paste-back geometry."""
