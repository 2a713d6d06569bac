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
    description: The files to install (required with O(action=install)).
    type: list
    elements: dict
    suboptions:
      path:
        description: Absolute destination path. Missing parent directories are created (mode O(dir_mode)).
        type: path
        required: true
      content:
        description:
          - The file's content. Binary content is given as C(base64:) followed by the base64 text.
          - Exactly one of O(files[].content) and O(files[].source) is required.
        type: str
      source:
        description:
          - Take the content from this file on the host instead, and remove it once the whole set is written and
            validated (a C(.csr) beside it moves along to O(files[].path)C(.csr)). Used to put a key made on the host (C(key.pem.next) from
            M(mtls.rollout.host_key)) in place together with its certificate.
        type: path
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
      keep_newer:
        description:
          - The file holds a certificate (first in the file, as in a fullchain). Never replace it with an older
            one - when the file on the host holds a certificate issued later (not before) by the same CA (issuer
            name and authority key identifier) for the same key, still valid, the file is left as it is, listed
            in RV(kept) and warned about. Another run (a second control node) renewed it meanwhile.
        type: bool
        default: false
  validate:
    description: Command run after writing when anything changed; a non-zero exit restores every file.
    type: str
  prune:
    description:
      - Remove, in the same change, files in O(prune[].path) matching O(prune[].pattern) that are not among
        O(files) (for example the trust anchor of a root CA no longer trusted). Restored if the change fails.
    type: list
    elements: dict
    default: []
    suboptions:
      path:
        description: Directory.
        type: path
        required: true
      pattern:
        description: Shell pattern of file names, such as V(mtls-rollout-*.crt).
        type: str
        required: true
  pairs:
    description:
      - Certificate and key files (on the host) that must belong together once the set is written; a pair that
        does not restores every file. Checked with the host's C(openssl) command.
    type: list
    elements: dict
    default: []
    suboptions:
      certificate:
        description: Certificate (or fullchain) file; its first certificate is checked.
        type: path
        required: true
      key:
        description: Private key file.
        type: path
        required: true
  generation_dir:
    description:
      - Keep what the change replaces (content, mode, owner, or that a file did not exist) in this directory as a
        pending generation, so that O(action=rollback) can put it back after the new files failed a canary gate,
        and O(action=confirm) drops it once they passed (an old key kept there is removed then). A change made
        while a generation is still pending keeps the older state of each file, the last one proven good.
    type: path
  confirm:
    description:
      - With O(generation_dir) and O(action=install), accept the result at once (a run without a canary gate) - any
        pending generation is dropped, so a later rollback never goes back past files installed since.
    type: bool
    default: false
  action:
    description:
      - V(install) - install O(files). V(rollback) - put back the pending generation in O(generation_dir), then run
        O(validate). V(confirm) - drop the pending generation.
    type: str
    choices: [install, rollback, confirm]
    default: install
  dir_mode:
    description: Mode of parent directories this module creates.
    type: str
    default: '0755'
  requires:
    description:
      - Commands the change needs on the host (names on C(PATH) or absolute paths), such as V(nginx) for
        O(validate) V(nginx -t). When one is missing, the module writes nothing and does not fail - it returns the
        names in RV(missing), so a play installs them only then and runs the module again (one run per host when
        everything is in place). In check mode the files that would change are reported as usual.
    type: list
    elements: str
    default: []
  service:
    description:
      - The service these files configure - started (with systemd's C(systemctl), else the C(service) command) when
        it does not run, after the files are in place; RV(service_started) says so. Reloading it when files
        changed is left to the caller (a handler).
    type: str
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

- name: The same, in one run per host when nginx is installed and running (installs it only when missing)
  mtls.rollout.install_files: &nginx_files
    validate: nginx -t
    requires: [nginx]
    service: nginx
    files: []  # as above
  register: nginx_files
  notify: Reload nginx

- name: Install nginx only where it is missing
  ansible.builtin.apt:
    name: nginx
  when: nginx_files.missing | length > 0

- name: Install the files there, now that nginx is
  mtls.rollout.install_files: *nginx_files
  when: nginx_files.missing | length > 0 and not ansible_check_mode
  notify: Reload nginx
"""

RETURN = r"""
changed_files:
  description: Paths that were (or in check mode would be) written.
  returned: always
  type: list
  elements: str
kept:
  description:
    - Files of O(files[].keep_newer) left as they were because they hold a newer certificate than the one given.
  returned: with O(action=install)
  type: list
  elements: dict
  contains:
    path:
      description: The file.
      type: str
    serial:
      description: Serial (lowercase hex) of the newer certificate the file holds.
      type: str
    not_before:
      description: Its start of validity (ISO 8601, UTC).
      type: str
    not_after:
      description: Its end of validity.
      type: str
    offered_serial:
      description: Serial of the older certificate that was given (not installed).
      type: str
    offered_not_before:
      description: Its start of validity.
      type: str
  sample:
    - path: /etc/nginx/mtls/fullchain.pem
      serial: 5a397a7ccef885c2cef75c366908016c3faa6f27
      not_before: "2026-11-30T19:20:41Z"
      not_after: "2027-11-30T19:21:11Z"
      offered_serial: 43d796a9e5eeac0b65416f31fb2b185515458ca0
      offered_not_before: "2026-11-30T19:12:03Z"
missing:
  description: Commands of O(requires) not installed on the host (nothing was written when any is).
  returned: with O(action=install)
  type: list
  elements: str
service_started:
  description: Whether O(service) was (or in check mode would be) started because it did not run.
  returned: with O(action=install)
  type: bool
"""

import base64

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.mtls.rollout.plugins.module_utils.host import file_set, generation, service


def _normalise(module, files):
    out = []
    for f in files:
        try:
            mode = int(f["mode"], 8)
        except ValueError:
            module.fail_json(msg=f"invalid mode {f['mode']!r} for {f['path']}: use an octal string such as '0644'")
        content = f["content"]
        if (content is None) == (f["source"] is None):
            module.fail_json(msg=f"{f['path']}: give exactly one of content and source")
        data = None if content is None else (
            base64.b64decode(content[7:]) if content.startswith("base64:") else content.encode())
        out.append({"path": f["path"], "content": data, "source": f["source"], "mode": mode, "owner": f["owner"],
                    "group": f["group"], "secret": f["secret"] or f["source"] is not None,
                    "keep_newer": f["keep_newer"]})
    return out


def _generation(module):
    """rollback: put back the pending generation's files and validate; confirm: drop it (the files are proven)."""
    gen_dir, pending = module.params["generation_dir"], generation.pending(module.params["generation_dir"])
    paths = sorted((pending or {}).get("files", {}))
    if module.check_mode or pending is None:
        module.exit_json(changed=pending is not None, changed_files=paths if module.params["action"] == "rollback" else [])
    try:
        if module.params["action"] == "confirm":
            generation.clear(gen_dir)
            module.exit_json(changed=True, changed_files=[])
        restored = file_set.rollback(gen_dir, module.params["validate"])
    except (file_set.FileSetError, OSError) as e:
        module.fail_json(msg=f"rolling back to the generation in {gen_dir} failed, the files are as they were before "
                             f"the rollback and the generation is kept: {e}")
    module.exit_json(changed=True, changed_files=restored)


def main():
    module = AnsibleModule(
        argument_spec={
            "files": {"type": "list", "elements": "dict", "options": {
                "path": {"type": "path", "required": True},
                "content": {"type": "str", "no_log": True},
                "source": {"type": "path"},
                "mode": {"type": "str", "default": "0644"},
                "owner": {"type": "str"},
                "group": {"type": "str"},
                "secret": {"type": "bool", "default": False},
                "keep_newer": {"type": "bool", "default": False}}},
            "validate": {"type": "str"},
            "prune": {"type": "list", "elements": "dict", "default": [], "options": {
                "path": {"type": "path", "required": True},
                "pattern": {"type": "str", "required": True}}},
            "pairs": {"type": "list", "elements": "dict", "default": [], "options": {
                "certificate": {"type": "path", "required": True},
                "key": {"type": "path", "required": True}}},
            "dir_mode": {"type": "str", "default": "0755"},
            "generation_dir": {"type": "path"},
            "confirm": {"type": "bool", "default": False},
            "action": {"type": "str", "choices": ["install", "rollback", "confirm"], "default": "install"},
            "requires": {"type": "list", "elements": "str", "default": []},
            "service": {"type": "str"},
        },
        required_if=[("action", "install", ["files"]), ("action", "rollback", ["generation_dir"]),
                     ("action", "confirm", ["generation_dir"])],
        supports_check_mode=True,
    )
    if module.params["action"] != "install":
        _generation(module)
    files = _normalise(module, module.params["files"])
    missing = service.missing(module.params["requires"])
    if missing and not module.check_mode:
        module.exit_json(changed=False, changed_files=[], kept=[], missing=missing, service_started=False,
                         msg=f"not installed on this host: {', '.join(missing)} - nothing written; install it, then run again")
    try:
        prune = module.params["prune"]
        kept = file_set.keep_newer(files)
        changed = sorted(file_set.plan(files, check=True) + file_set.pruned(files, prune)) if module.check_mode else \
            file_set.apply(files, module.params["validate"], int(module.params["dir_mode"], 8), module.params["pairs"],
                           prune, module.params["generation_dir"], module.params["confirm"])
    except (file_set.FileSetError, OSError) as e:
        module.fail_json(msg=f"{e}; every file was restored to its previous state", changed=False)
    try:  # a service not installed yet (check mode, missing) would be started by the run that installs it
        name = module.params["service"]
        started = bool(name) and (bool(missing) or service.ensure_running(name, module.check_mode))
    except service.ServiceError as e:
        module.fail_json(msg=f"the files are in place, but {e}", changed=bool(changed), changed_files=changed)
    for k in kept:
        module.warn(f"{k['path']} not replaced: it holds a newer certificate (serial {k['serial']}, not before "
                    f"{k['not_before']}) than the one given (serial {k['offered_serial']}, not before "
                    f"{k['offered_not_before']}), from the same CA for the same key - another run renewed it meanwhile")
    result = {"changed": bool(changed) or started, "changed_files": changed, "kept": kept, "missing": missing,
              "service_started": started}
    if module._diff and changed:
        result["diff"] = [{"before_header": f["path"], "after_header": f["path"],
                           "before": "", "after": "(secret content changed)\n" if f["secret"]
                           else (f["content"] or b"").decode(errors="replace")}
                          for f in files if f["path"] in changed]
        listed = {f["path"] for f in files}
        result["diff"] += [{"before_header": path, "after_header": path, "before": "(file)\n", "after": "(removed)\n"}
                           for path in changed if path not in listed]
    module.exit_json(**result)


if __name__ == "__main__":
    main()
