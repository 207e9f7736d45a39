"""Names shared by the operator's ServerApp and the banks' ClientApp (which never import
each other): message stages and the record keys inside each message."""

# Stage of a round; sent as the message type's action ("query.stats", "train", "evaluate").
STATS = "stats"  # banks send their feature moments through secure aggregation once per run

# RecordDict keys.
CONFIG = "config"  # ConfigRecord: the run's RunConfig.to_run_config() plus ROUND
GLOBAL = "global"  # ConfigRecord: the previous round's aggregate Payload (absent in round 1)
SCALER = "scaler"  # ConfigRecord: the aggregate Payload of the banks' feature moments
UPDATE = "update"  # ConfigRecord: a bank's protected Payload
METRICS = "metrics"  # MetricRecord: timings, evaluation metrics
BANK = "bank"  # ConfigRecord: {"bank-id": str} the replying bank's id
AUDIT = "audit"  # ConfigRecord: the operator's audit-log head {"seq", "sha256", "operator_key"}

ROUND = "round"
BANK_ID = "bank-id"

# Error code a bank uses for a user-fixable problem (bad data, budget exhausted, ...).
BANK_ERROR_CODE = 4000
# Error code of a bank that refuses to train because its privacy budget is spent: the operator
# goes on without it (results.json privacy.halted_banks) while min-banks remain.
BUDGET_ERROR_CODE = 4001
