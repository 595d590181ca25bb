"""`cai constitution audit`: whether each of a constitution's comparison questions does any work.

- figures.py     each question alone against the labels; correlations and trade-offs between them
- fit.py         non-negative weights over the questions fitted to the labels, held-out agreement
- candidates.py  rules the labels follow that no question states, proposed by the judge model
- report.py      audit.json, report.md, the plot and the printed summary
- run.py         AuditConfig and run_audit: the judge, its calibration, the passes, --write
"""

from cai.audit.run import AuditConfig, run_audit

__all__ = ["AuditConfig", "run_audit"]
