"""StagedRollout: a candidate's way to production, stage by stage, with canary verdicts."""
