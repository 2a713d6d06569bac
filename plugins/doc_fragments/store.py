# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Options every store-backed module shares."""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  pki_dir:
    description:
      - The PKI store on the control node. It holds C(ca/<name>/) for each CA, C(certs/<name>/) for each
        leaf certificate, and C(index.json), the issuance record.
      - Directories are created with mode C(0700), keys and bundles are written with mode C(0600).
    type: path
    default: ~/.local/share/mtls-rollout/pki
notes:
  - "Runs on the control node (use C(delegate_to: localhost) or a localhost play) and needs the Python
    C(cryptography) library (>= 44) there."
  - The store is locked for the duration of the task, so concurrent runs cannot interleave writes or
    reuse a serial number. Files are written to a temporary name, synced and renamed, so a failed or
    interrupted run never leaves a half-written file.
"""

    SUBJECT = r"""
options:
  subject:
    description: Distinguished name attributes.
    type: dict
    suboptions:
      common_name:
        description: CN.
        type: str
      organization:
        description: O.
        type: str
      organizational_unit:
        description: OU.
        type: str
      country:
        description: C, a two-letter upper-case ISO 3166 code.
        type: str
      state:
        description: ST.
        type: str
      locality:
        description: L.
        type: str
      email:
        description: emailAddress.
        type: str
"""
