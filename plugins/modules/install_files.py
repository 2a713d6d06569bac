#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: install_files
short_description: Install certificates, keys and configuration on a host as one validated change
version_added: 0.1.0
description:
  - Writes every file in O(files) whose content, mode or owner differs (each atomically - temporary file,
    fsync, rename), then runs O(validate) (for example C(nginx -t)). If writing or validation fails, every file
    is put back as it was (files that did not exist are removed) and the task fails with the validator's output,
    so a running service keeps its working configuration.
  - One module run for the whole set, instead of a copy/template task (and its round trips) per file.
  - Runs on the managed host; needs only the Python standard library there.
author: mtls.rollout maintainers (!UNKNOWN)
extends_documentation_fragment:
  - mtls.rollout.attributes
attributes:
  check_mode:
    support: full
    description: Reports which files would change.
  diff_mode:
    support: full
    description: Shows content changes of files not marked O(files[].secret); secret files only by name.
options:
  files:
    description: The files to install.
    type: list
    elements: dict
    required: true
    suboptions:
      path:
        description: Absolute destination path. Missing parent directories are created (mode O(dir_mode)).
        type: path
        required: true
      content:
        description: The file's content.
        type: str
        required: true
      mode:
        description: Octal mode, such as V('0644') or V('0400').
        type: str
        default: '0644'
      owner:
        description: Owner name (default - leave as created, i.e. the connecting user).
        type: str
      group:
        description: Group name.
        type: str
      secret:
        description: The content is secret (a private key, a PKCS#12 bundle) - never shown in diffs or logs.
        type: bool
        default: false
  validate:
    description: Command run after writing when anything changed; a non-zero exit restores every file.
    type: str
  dir_mode:
    description: Mode of parent directories this module creates.
    type: str
    default: '0755'
"""

EXAMPLES = r"""
- name: Push the server chain, key and nginx configuration, validated by nginx -t
  mtls.rollout.install_files:
    validate: nginx -t
    files:
      - path: /etc/nginx/mtls/fullchain.pem
        content: "{{ lookup('ansible.builtin.file', pki + '/certs/web1-server/fullchain.pem') }}\n"
      - path: /etc/nginx/mtls/key.pem
        content: "{{ lookup('ansible.builtin.file', pki + '/certs/web1-server/key.pem') }}\n"
        mode: '0400'
        owner: root
        secret: true
  notify: Reload nginx
"""

RETURN = r"""
changed_files:
  description: Paths that were (or in check mode would be) written.
  returned: always
  type: list
  elements: str
"""

import base64

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.mtls.rollout.plugins.module_utils.host import file_set


def _normalise(module, files):
    out = []
    for f in files:
        try:
            mode = int(f["mode"], 8)
        except ValueError:
            module.fail_json(msg=f"invalid mode {f['mode']!r} for {f['path']}: use an octal string such as '0644'")
        content = f["content"]
        data = base64.b64decode(content[7:]) if content.startswith("base64:") else content.encode()
        out.append({"path": f["path"], "content": data, "mode": mode, "owner": f["owner"], "group": f["group"],
                    "secret": f["secret"]})
    return out


def main():
    module = AnsibleModule(
        argument_spec={
            "files": {"type": "list", "elements": "dict", "required": True, "options": {
                "path": {"type": "path", "required": True},
                "content": {"type": "str", "required": True, "no_log": True},
                "mode": {"type": "str", "default": "0644"},
                "owner": {"type": "str"},
                "group": {"type": "str"},
                "secret": {"type": "bool", "default": False}}},
            "validate": {"type": "str"},
            "dir_mode": {"type": "str", "default": "0755"},
        },
        supports_check_mode=True,
    )
    files = _normalise(module, module.params["files"])
    try:
        changed = file_set.plan(files) if module.check_mode else file_set.apply(
            files, module.params["validate"], int(module.params["dir_mode"], 8))
    except (file_set.FileSetError, OSError) as e:
        module.fail_json(msg=f"{e}; every file was restored to its previous state", changed=False)
    result = {"changed": bool(changed), "changed_files": changed}
    if module._diff and changed:
        result["diff"] = [{"before_header": f["path"], "after_header": f["path"],
                           "before": "", "after": "(secret content changed)\n" if f["secret"]
                           else f["content"].decode(errors="replace")}
                          for f in files if f["path"] in changed]
    module.exit_json(**result)


if __name__ == "__main__":
    main()
