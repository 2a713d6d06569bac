# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the modules need where they run (the collection's runtime requirements.txt says the same)."""

from __future__ import annotations


class ModuleDocFragment:
    # modules that run on the control node (the PKI engine)
    DOCUMENTATION = r"""
options: {}
requirements:
  - cryptography >= 44 (Python library, on the control node)
"""

    # the probe: on whichever host connects
    PROBE = r"""
options: {}
requirements:
  - cryptography (Python library, on the host that probes; Debian package C(python3-cryptography))
"""
