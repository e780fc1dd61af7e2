"""Face recognition with BNAS (IJCV Sec. 4.4, Table 5).

CASIA-WebFace training data, LFW / CFP-FP / AgeDB-30 verification sets, the
face networks (cells from a genotype, ResNet baselines), the margin heads and
the standard 10-fold verification protocol.
"""
