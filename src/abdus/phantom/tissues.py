"""The acoustic tissue classes of one patient, by name.

Echogenicity follows the usual ordering (Rumack, *Diagnostic Ultrasound*): renal sinus >
perirenal fat > spleen >= liver > renal cortex > medullary pyramids > fluid; a fatty liver is
brighter and attenuates more. Echoes are in dB relative to normal liver parenchyma (0 dB),
attenuation in dB/cm/MHz (:class:`abdus.phantom.physics.Tissue`).
"""

from __future__ import annotations

from abdus.phantom.anatomy import PatientAnatomy
from abdus.phantom.physics import Tissue


def tissue_table(anatomy: PatientAnatomy) -> dict[str, Tissue]:
    """Acoustic tissue classes of one patient (echo dB relative to normal liver)."""
    liver = anatomy.liver_echo_db
    cortex = anatomy.kidney_cortex_echo_db
    # Tissue(echo_db, atten, texture_db, streak_db)
    return {
        "background": Tissue(-8.0, 0.6, 5.5, 1.5),
        "skin": Tissue(5.0, 0.6, 1.0, 2.0),
        "fat": Tissue(-12.0, 0.6, 3.0, 2.5),
        "fascia": Tissue(3.0, 0.7, 1.0, 3.0),
        "muscle": Tissue(-9.0, 0.9, 1.0, 3.5),
        "liver": Tissue(liver, anatomy.liver_atten, 1.2),
        "mirror": Tissue(liver - 4.0, 0.5, 2.5, 1.0),
        "spleen": Tissue(anatomy.spleen_echo_db, 0.5, 0.8),
        "cortex": Tissue(cortex, 0.6, 0.9),
        "pyramid": Tissue(cortex - 10.0, 0.5, 0.8),
        "sinus": Tissue(anatomy.kidney_sinus_echo_db, 0.7, 4.5, 1.5),
        "perirenal": Tissue(5.0, 0.6, 3.5, 2.5),
        "fluid": Tissue(-48.0, 0.02, 0.0),
        "blood": Tissue(-40.0, 0.05, 0.0),
        "diaphragm": Tissue(9.0, 0.8, 1.0, 2.0),
        "gas": Tissue(12.0, 60.0, 2.0, 0.0, gas=True),
        "bone": Tissue(12.0, 60.0, 1.0),
        "spinal_canal": Tissue(-12.0, 4.0, 2.0),  # behind the discs: stops what they let through
        "stone": Tissue(14.0, 40.0, 0.5),
        "ligamentum_teres": Tissue(8.0, 6.0, 1.0),  # bright and shadowing
        "bowel_wall": Tissue(-10.0, 0.6, 1.0),
        "bowel_content": Tissue(2.0, 0.6, 5.0, 1.0),
        "pancreas": Tissue(1.0, 0.5, 2.5),
        "psoas": Tissue(-9.0, 0.8, 1.0, 4.0),
        "myocardium": Tissue(-6.0, 0.6, 1.5, 1.0),
    }
