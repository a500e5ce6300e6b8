"""Planning: read and check the config and lanes, expand sweeps, gate the models, before any job runs
(compress env; imported by rules/common.smk at parse time)."""
