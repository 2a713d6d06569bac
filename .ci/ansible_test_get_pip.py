"""Offline stand-in for the pip bootstrap script that ansible-test downloads.

ansible-test creates its sanity-test virtual environments without pip, then runs
``get-pip-<version>.py`` from ci-files.testing.ansible.com to put pip in. That host is not
reachable from this project's machines (only the package registries are), so ``make sanity``
saves this file where ansible-test caches that script (~/.ansible/test/cache/get_pip_X_Y.py).
It does the same job: bootstrap pip with the standard library's ``ensurepip``, then let that
pip install the packages ansible-test asked for (``pip==24.2``) from PyPI.

ansible-test runs it as: ``python get_pip_X_Y.py [pip options] PACKAGES [--no-setuptools] [--no-wheel]``.
"""
# mtls.rollout marker: ansible-test get-pip stand-in

import os
import subprocess
import sys


def main():
    args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
    keep_setuptools = "--no-setuptools" not in sys.argv[1:]
    env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1")
    subprocess.run([sys.executable, "-m", "ensurepip", "--upgrade"], check=True, env=env,
                   stdout=subprocess.DEVNULL)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--upgrade"] + args, check=True, env=env)
    if not keep_setuptools:
        # ensurepip on Python < 3.12 also installs setuptools; ansible-test wants none.
        subprocess.run([sys.executable, "-m", "pip", "uninstall", "--quiet", "--yes", "setuptools"],
                       check=False, env=env, stderr=subprocess.DEVNULL)


if __name__ == "__main__":
    main()
