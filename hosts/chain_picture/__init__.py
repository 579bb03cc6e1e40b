"""Geometry of a disk's backing-chain picture.

Pure: given the chain's layers (active first) and the disk's block job, it returns boxes
and arrows in SVG user units. The template `hosts/disk_detail.html#chain_picture` only
draws what this package decides, so readability rules (compact rows for long chains,
truncated names, a collapsed middle in the small pictures) are tested here without HTML.

Layers and jobs are read by attribute, so both `hosts.records` dataclasses and
`hosts.models.ChainLayer` rows work.

Callers import from the module that holds the name:
  layout          layout() places the layers, the mirror target and the arrows; picture_for_disk
  shapes          Box, Arrow, ChainPicture and the picture's dimensions; the Layer protocol
  text            fitting text into a box: human_bytes, ellipsize, shorten_names, chars_that_fit
  jobs_and_media  what a disk's block job and medium say: job_percent, job_words, medium_of, disk_job
"""
