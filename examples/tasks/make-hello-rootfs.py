#!/usr/bin/env python3
"""make-hello-rootfs.py: writes hello-rootfs.zip, the root filesystem of the example task
hello-rootfs.json, byte for byte reproducibly (stored entries, fixed timestamps and modes).

Usage: python3 examples/tasks/make-hello-rootfs.py [output.zip]
"""

import sys
import zipfile

ENTRIES = [
    ("greeting.txt", b"Hello from the rootfs of the hello example task!\n"),
    ("data/", None),
    ("data/numbers.txt", b"1\n2\n3\n"),
]


def main() -> None:
    out = sys.argv[1] if len(sys.argv) > 1 else "hello-rootfs.zip"
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, data in ENTRIES:
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.create_system = 3  # Unix, so that the modes below are meaningful
            if data is None:
                info.external_attr = (0o40755 << 16) | 0x10  # directory
                archive.writestr(info, b"")
            else:
                info.external_attr = 0o100644 << 16
                archive.writestr(info, data)


if __name__ == "__main__":
    main()
