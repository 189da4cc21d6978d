CREATE TABLE ingestion_runs (
	id INTEGER NOT NULL,
	source VARCHAR(200) NOT NULL,
	dataset VARCHAR(200) NOT NULL,
	kind VARCHAR(20) NOT NULL,
	batch_id VARCHAR(64),
	started_at DATETIME NOT NULL,
	finished_at DATETIME,
	status VARCHAR(20) NOT NULL,
	rows_read INTEGER,
	rows_committed INTEGER,
	rows_quarantined INTEGER,
	version INTEGER,
	cursor_before TEXT,
	cursor_after TEXT,
	error TEXT,
	details JSON,
	PRIMARY KEY (id)
);
CREATE INDEX ix_ingestion_runs_dataset ON ingestion_runs (dataset);
CREATE INDEX ix_ingestion_runs_source ON ingestion_runs (source);
CREATE TABLE ingested_files (
	fingerprint VARCHAR(64) NOT NULL,
	source VARCHAR(200) NOT NULL,
	path TEXT NOT NULL,
	size INTEGER,
	batch_id VARCHAR(64),
	version INTEGER,
	loaded_at DATETIME NOT NULL,
	PRIMARY KEY (fingerprint)
);
CREATE INDEX ix_ingested_files_source ON ingested_files (source);
CREATE TABLE cursors (
	source VARCHAR(200) NOT NULL,
	value TEXT,
	updated_at DATETIME NOT NULL,
	PRIMARY KEY (source)
);
CREATE TABLE quality_reports (
	id INTEGER NOT NULL,
	run_id INTEGER,
	dataset VARCHAR(200) NOT NULL,
	batch_id VARCHAR(64),
	created_at DATETIME NOT NULL,
	report JSON NOT NULL,
	PRIMARY KEY (id)
);
CREATE INDEX ix_quality_reports_dataset ON quality_reports (dataset);
CREATE INDEX ix_quality_reports_run_id ON quality_reports (run_id);
CREATE TABLE training_runs (
	id INTEGER NOT NULL,
	model VARCHAR(200) NOT NULL,
	started_at DATETIME NOT NULL,
	finished_at DATETIME,
	status VARCHAR(20) NOT NULL,
	version INTEGER,
	dataset VARCHAR(200),
	data_version INTEGER,
	metrics JSON,
	params JSON,
	error TEXT,
	details JSON,
	PRIMARY KEY (id)
);
CREATE INDEX ix_training_runs_model ON training_runs (model);
CREATE TABLE model_versions (
	id INTEGER NOT NULL,
	model VARCHAR(200) NOT NULL,
	version INTEGER NOT NULL,
	task VARCHAR(40) NOT NULL,
	created_at DATETIME NOT NULL,
	status VARCHAR(20) NOT NULL,
	artifact_sha256 VARCHAR(64),
	artifact_format VARCHAR(20),
	dataset VARCHAR(200),
	data_version INTEGER,
	metrics JSON,
	params JSON,
	signature JSON,
	threshold FLOAT,
	code_version VARCHAR(80),
	packages JSON,
	run_id INTEGER,
	details JSON,
	PRIMARY KEY (id),
	CONSTRAINT uq_model_version UNIQUE (model, version)
);
CREATE INDEX ix_model_versions_model ON model_versions (model);
CREATE TABLE aliases (
	model VARCHAR(200) NOT NULL,
	alias VARCHAR(40) NOT NULL,
	version INTEGER NOT NULL,
	updated_at DATETIME NOT NULL,
	PRIMARY KEY (model, alias)
);
CREATE TABLE ledger (
	id INTEGER NOT NULL,
	ts DATETIME NOT NULL,
	model VARCHAR(200) NOT NULL,
	action VARCHAR(40) NOT NULL,
	version INTEGER,
	alias VARCHAR(40),
	previous_version INTEGER,
	reason TEXT,
	actor VARCHAR(80),
	details JSON,
	PRIMARY KEY (id)
);
CREATE INDEX ix_ledger_model ON ledger (model);
CREATE INDEX ix_ledger_ts ON ledger (ts);
CREATE TABLE deployments (
	id INTEGER NOT NULL,
	model VARCHAR(200) NOT NULL,
	version INTEGER NOT NULL,
	target VARCHAR(40) NOT NULL,
	status VARCHAR(20) NOT NULL,
	created_at DATETIME NOT NULL,
	endpoint TEXT,
	details JSON,
	PRIMARY KEY (id)
);
CREATE INDEX ix_deployments_model ON deployments (model);
CREATE TABLE monitor_reports (
	id INTEGER NOT NULL,
	created_at DATETIME NOT NULL,
	model VARCHAR(200) NOT NULL,
	version INTEGER,
	kind VARCHAR(40) NOT NULL,
	status VARCHAR(20),
	report JSON NOT NULL,
	PRIMARY KEY (id)
);
CREATE INDEX ix_monitor_reports_model ON monitor_reports (model);
