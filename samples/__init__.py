"""`chipq.samples`: the retrieval sample set that ships with chipq (see `chipq.data.samples_dir`).

`photos/`: 9 real photos (licences in `photos/LICENSES.md`), none of them a calibration or training
photo (`chipq verify`'s default photos; `chipq demo` makes its harder retrieval set from them,
`chipq.pipeline.demo_set`); `queries/`: 54 Copydays-style edits of them (`make_queries.py`);
`groundtruth.json`: which photo each query shows. The two scripts here are build scripts, not imported by chipq.
"""
