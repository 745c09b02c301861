"""The workflows of chipq, one home per job: compress, plan, verify, demo, extract, search.

Each module sequences the lower layers (importers, quant, retrain, retrieval, executor) for one
job; the CLI parses, calls one function here and renders; `chipq.reports` renders. Nothing above
this layer re-sequences the steps itself.
"""
