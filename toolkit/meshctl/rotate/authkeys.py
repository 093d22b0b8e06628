"""Remote `authorized_keys` edits as POSIX shell scripts (sh + awk + coreutils, nothing to install).

An edit adds one key line (if its key blob is not there yet) and/or removes every line holding a given
key blob, whatever options or comment the line carries. The new content goes to a temporary file in the
same directory which takes the old file's mode and owner and is renamed over it, so sshd sees the old
file or the new one, never a half-written one. The script prints `changed` or `unchanged`.
"""

from __future__ import annotations

import shlex

from .sshexec import quote_path

__all__ = ["count_script", "edit_script", "key_blob"]

_EDIT = r"""set -eu
f=@PATH@
add=@ADD@
addb=@ADDB@
rm=@RM@
umask 077
if [ -L "$f" ]; then f=$(readlink -f -- "$f"); fi
d=$(dirname -- "$f")
if [ ! -d "$d" ]; then mkdir -p -- "$d"; chmod 700 -- "$d"; fi
if [ ! -e "$f" ]; then : > "$f"; fi
t=$(mktemp "$f.meshctl.XXXXXX")
trap 'rm -f -- "$t"' EXIT
awk -v add="$add" -v addb="$addb" -v rm="$rm" '
{ keep = 1
  for (i = 1; i <= NF; i++) if (rm != "" && $i == rm) keep = 0
  if (keep) { print; for (i = 1; i <= NF; i++) if (addb != "" && $i == addb) seen = 1 } }
END { if (add != "" && !seen) print add }' "$f" > "$t"
if cmp -s -- "$f" "$t"; then echo unchanged; exit 0; fi
chown --reference="$f" -- "$t" 2>/dev/null || true
chmod --reference="$f" -- "$t"
mv -f -- "$t" "$f"
trap - EXIT
echo changed
"""

_COUNT = r"""f={path}
if [ ! -e "$f" ]; then echo 0; exit 0; fi
awk -v b={blob} '{{ for (i = 1; i <= NF; i++) if ($i == b) n++ }} END {{ print n + 0 }}' "$f"
"""


def key_blob(public_line: str) -> str:
    """The base64 key blob of an OpenSSH public key line (`type blob comment`)."""
    parts = public_line.split()
    if len(parts) < 2 or not parts[0].startswith(("ssh-", "ecdsa-", "sk-")):
        raise ValueError(f"not an OpenSSH public key line: {public_line[:40]!r}")
    return parts[1]


def edit_script(path: str, *, add: str | None = None, remove: str | None = None) -> str:
    """Shell script: add the key line `add` (if absent) and remove every line with the key of `remove`."""
    if add is None and remove is None:
        raise ValueError("nothing to add or remove")
    add_line = " ".join(add.split()) if add else ""
    values = {
        "@PATH@": quote_path(path),
        "@ADD@": shlex.quote(add_line),
        "@ADDB@": shlex.quote(key_blob(add_line) if add else ""),
        "@RM@": shlex.quote(key_blob(remove) if remove else ""),
    }
    script = _EDIT
    for marker, value in values.items():  # str.format would trip over awk's braces
        script = script.replace(marker, value)
    return script


def count_script(path: str, public_line: str) -> str:
    """Shell script printing how many lines of the file hold the key of `public_line`."""
    return _COUNT.format(path=quote_path(path), blob=shlex.quote(key_blob(public_line)))
