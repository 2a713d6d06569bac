# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: pki_file
short_description: Read files of the PKI store byte for byte, binary ones (PKCS#12) as C(base64:...)
version_added: 0.1.0
description:
  - Returns the content of files on the control node - typically certificates, keys and PKCS#12 bundles
    in the store C(mtls_pki_dir) - exactly as stored. Unlike P(ansible.builtin.file#lookup) it never strips
    whitespace and never garbles binary content.
  - Text (UTF-8) content is returned as it is. Binary content (or, with O(encoding=base64), any content) is
    returned as C(base64:) followed by its Base64 encoding, the form the C(content) of
    M(mtls.rollout.install_files) decodes back into the original bytes, so a PKCS#12 bundle reaches the host
    intact.
  - Relative paths are searched like those of P(ansible.builtin.file#lookup) (the role's or play's C(files/)).
  - Vault-encrypted files are decrypted.
author: mtls.rollout maintainers (!UNKNOWN)
options:
  _terms:
    description: Paths of the files to read.
    type: list
    elements: path
    required: true
  encoding:
    description:
      - How to return the content.
      - V(auto) - as text when it is valid UTF-8 without NUL bytes (and does not itself start with C(base64:)),
        otherwise C(base64:) and the Base64 encoding.
      - V(base64) - always C(base64:) and the Base64 encoding.
      - V(text) - always as text; fails for content that is not UTF-8.
    type: str
    choices: [auto, base64, text]
    default: auto
notes:
  - The lookup runs on the control node. Its results may be key material, so pass them only to options that
    are C(no_log), such as the C(content) of M(mtls.rollout.install_files).
seealso:
  - module: mtls.rollout.install_files
"""

EXAMPLES = r"""
- name: Install a client's PEM key and its PKCS#12 bundle in one change
  mtls.rollout.install_files:
    files:
      - path: /etc/mtls/client/key.pem
        content: "{{ lookup('mtls.rollout.pki_file', pki_dir ~ '/certs/app1/key.pem') }}"
        mode: '0600'
        secret: true
      - path: /etc/mtls/client/client.p12
        content: "{{ lookup('mtls.rollout.pki_file', pki_dir ~ '/certs/app1/bundle.p12') }}"
        mode: '0600'
        secret: true

- name: Always Base64, e.g. to hand a certificate to an API that wants it so
  ansible.builtin.debug:
    msg: "{{ lookup('mtls.rollout.pki_file', '/srv/pki/ca/root/cert.pem', encoding='base64') }}"
"""

RETURN = r"""
_raw:
  description:
    - One string per path - the text, or C(base64:) and the Base64 encoding of the bytes.
  type: list
  elements: str
"""

import base64

from ansible.errors import AnsibleLookupError
from ansible.plugins.lookup import LookupBase

PREFIX = "base64:"


def encode(data, encoding="auto", where="file"):
    """The file's bytes as the lookup returns them (text, or ``base64:`` + Base64)."""
    if encoding != "base64":
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            text = None
        if text is not None and "\x00" not in text and (encoding == "text" or not text.startswith(PREFIX)):
            return text
        if encoding == "text":
            raise AnsibleLookupError(f"{where} is not UTF-8 text: use encoding=auto or encoding=base64")
    return PREFIX + base64.b64encode(data).decode("ascii")


class LookupModule(LookupBase):

    def run(self, terms, variables=None, **kwargs):
        self.set_options(var_options=variables, direct=kwargs)
        encoding = self.get_option("encoding")
        out = []
        for term in terms:
            path = self.find_file_in_search_path(variables, "files", term, ignore_missing=True)
            if not path:
                raise AnsibleLookupError(f"file {term!r} not found (relative paths are searched in files/)")
            real = self._loader.get_real_file(path, decrypt=True)
            try:
                with open(real, "rb") as f:
                    data = f.read()
            except OSError as e:
                raise AnsibleLookupError(f"cannot read {path}: {e.strerror}") from None
            finally:
                self._loader.cleanup_tmp_file(real)
            out.append(encode(data, encoding, path))
        return out
