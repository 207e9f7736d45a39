"""Names shared by the operator's ServerApp and the banks' ClientApp (which never import
each other): message stages and the record keys inside each message."""

# Stage of a round; sent as the message type's action ("query.stats", "train", "evaluate").
STATS = "stats"  # banks send their feature moments through secure aggregation once per run
# Evaluation is two messages: "evaluate" (banks score MODEL on SPLIT and send protected per-bin
# counts) then "query.pooled" (banks reveal the aggregated COUNTS, answer consortium metrics).
POOLED = "pooled"

# RecordDict keys.
CONFIG = "config"  # ConfigRecord: the run's RunConfig.to_run_config() plus ROUND
GLOBAL = "global"  # ConfigRecord: the previous round's aggregate Payload (absent in round 1)
SCALER = "scaler"  # ConfigRecord: the aggregate Payload of the banks' feature moments
UPDATE = "update"  # ConfigRecord: a bank's protected Payload
METRICS = "metrics"  # MetricRecord: timings; consortium-level pooled metrics (query.pooled)
MODEL = "model"  # ConfigRecord: the aggregate Payload of the model to evaluate ("evaluate")
COUNTS = "counts"  # ConfigRecord: the aggregate Payload of the banks' score counts
BANK = "bank"  # ConfigRecord: {"bank-id": str} the replying bank's id

ROUND = "round"
SPLIT = "split"  # in CONFIG of "evaluate": "val" (rounds, model selection) or "test" (final)
CONTRIBUTORS = "contributors"  # in CONFIG of "query.pooled": banks summed in COUNTS
BANK_ID = "bank-id"

# Error code a bank uses for a user-fixable problem (bad data, budget exhausted, ...).
BANK_ERROR_CODE = 4000
# Error code of a bank that refuses to train because its privacy budget is spent: the operator
# goes on without it (results.json privacy.halted_banks) while min-banks remain.
BUDGET_ERROR_CODE = 4001
