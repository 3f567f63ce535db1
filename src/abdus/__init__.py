"""abdus: one multi-task network for abdominal ultrasound view classification and caliper landmarks.

The system of Xu et al., "Less is More: Simultaneous View Classification and Landmark Detection
for Abdominal Ultrasound Images" (MICCAI 2018).
"""

__version__ = "0.1.0"
