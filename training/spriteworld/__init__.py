"""SpriteWorld-only training code: its clip and triplet sources, the checks and scores that need
its ground truth (motion check, tracking, pair judges), and the ablation. Only this package (and
SpriteWorld pretraining, training/pretrain/) imports libragen_core.spriteworld; the general
training code reaches SpriteWorld data through the TripletSource interface
(training/common/sources.py)."""
