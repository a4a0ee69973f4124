#!/usr/bin/env python3
"""Compares the metadata tags exiftool reports on two folders of images.

    scripts/compare-tags.py ORIGINALS_DIR OTHER_DIR

Reads every image below ORIGINALS_DIR (JPEG, PNG, TIFF, WebP, BMP, GIF) with
`exiftool -j -G1 -a -s -r` and the file of the same relative path below OTHER_DIR, and compares
their tag sets and values, leaving out file-level tags: exiftool's System/File/ExifTool/Composite
groups, the PNG header (IHDR) fields and a TIFF's pixel-layout fields (compression, strips,
predictor...), which describe the container, not the metadata.
Prints one line per file that differs and a summary; exits 1 if any file differs.
"""
import json
import os
import subprocess
import sys

FILE_LEVEL_GROUPS = {"System", "File", "ExifTool", "Composite"}
PNG_HEADER = {"ImageWidth", "ImageHeight", "BitDepth", "ColorType", "Compression", "Filter",
              "Interlace", "Palette", "Transparency"}
# The fields of a TIFF's first directory (IFD0) that say how its pixels are stored, which the
# TIFF written back states in its own way (av1pack's archive::TIFF_LAYOUT_TAGS).
TIFF_LAYOUT = {"Compression", "PhotometricInterpretation", "FillOrder", "StripOffsets",
               "RowsPerStrip", "StripByteCounts", "MinSampleValue", "MaxSampleValue",
               "PlanarConfiguration", "FreeOffsets", "FreeByteCounts", "T4Options", "T6Options",
               "Predictor", "TileWidth", "TileLength", "TileOffsets", "TileByteCounts",
               "SampleFormat", "JPEGTables", "YCbCrCoefficients",
               "YCbCrSubSampling", "YCbCrPositioning", "ReferenceBlackWhite"}
EXTS = {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp", ".bmp", ".gif"}


def tags(root):
    out = subprocess.run(
        ["exiftool", "-j", "-G1", "-a", "-s", "-r", "-q", "-q", root],
        capture_output=True, check=False).stdout
    result = {}
    for rec in json.loads(out or b"[]"):
        rel = os.path.relpath(rec.pop("SourceFile"), root)
        ext = os.path.splitext(rel)[1].lower()
        if ext not in EXTS:
            continue
        kept = {}
        for key, value in rec.items():
            group, _, name = key.partition(":")
            if group in FILE_LEVEL_GROUPS:
                continue
            if group == "PNG" and name in PNG_HEADER:
                continue
            if ext in (".tif", ".tiff") and group == "IFD0" and name in TIFF_LAYOUT:
                continue
            kept[key] = value
        result[rel] = kept
    return result


def main():
    a, b = sys.argv[1], sys.argv[2]
    ta, tb = tags(a), tags(b)
    same = differ = missing = 0
    n_tags = 0
    for rel, want in sorted(ta.items()):
        got = tb.get(rel)
        if got is None:
            missing += 1
            print(f"missing: {rel}")
            continue
        n_tags += len(want)
        if got == want:
            same += 1
            continue
        differ += 1
        lost = sorted(set(want) - set(got))
        added = sorted(set(got) - set(want))
        changed = sorted(k for k in set(want) & set(got) if want[k] != got[k])
        print(f"differs: {rel}: lost {lost[:6]} added {added[:6]} changed {changed[:6]}")
    print(f"tags: {len(ta)} images, {same} with identical tag sets ({n_tags} tags), "
          f"{differ} differ, {missing} missing")
    sys.exit(1 if differ or missing else 0)


if __name__ == "__main__":
    main()
