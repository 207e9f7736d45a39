"""Names shared by the operator's ServerApp and the banks' ClientApp (which never import
each other): message stages and the record keys inside each message."""

# Stage of a round; sent as the message type's action ("query.stats", "train", "evaluate").
STATS = "stats"  # banks send their feature moments through secure aggregation once per run
# Evaluation is two messages: "evaluate" (banks score MODEL on SPLIT and send protected per-bin
# counts) then "query.pooled" (banks reveal the aggregated COUNTS, answer consortium metrics).
POOLED = "pooled"
# Cross-bank sketch stage ("query.sketch", round 0, run-config cross-bank=sketch): banks send
# their keyed account sketches protected; the aggregate rides under SKETCH (with its proof) in
# every later train/evaluate message, and SKETCH_CONTRIBUTORS in CONFIG says how many banks it
# sums (the backends reveal the mean of weight-1 contributions).
SKETCH = "sketch"
SKETCH_CONTRIBUTORS = "sketch-contributors"

# RecordDict keys.
CONFIG = "config"  # ConfigRecord: the run's RunConfig.to_run_config() plus ROUND
GLOBAL = "global"  # ConfigRecord: the previous round's aggregate Payload (absent in round 1)
SCALER = "scaler"  # ConfigRecord: the aggregate Payload of the banks' feature moments
UPDATE = "update"  # ConfigRecord: a bank's protected Payload
METRICS = "metrics"  # MetricRecord: timings; consortium-level pooled metrics (query.pooled)
MODEL = "model"  # ConfigRecord: the aggregate Payload of the model to evaluate ("evaluate")
COUNTS = "counts"  # ConfigRecord: the aggregate Payload of the banks' score counts
BANK = "bank"  # ConfigRecord: {"bank-id": str} the replying bank's id
AUDIT = "audit"  # ConfigRecord: the operator's audit-log head {"seq", "sha256", "operator_key"}

ROUND = "round"
SPLIT = "split"  # in CONFIG of "evaluate": "val" (rounds, model selection) or "test" (final)
CONTRIBUTORS = "contributors"  # in CONFIG of "query.pooled": banks summed in COUNTS
BANK_ID = "bank-id"

# Error code a bank uses for a user-fixable problem (bad data, budget exhausted, ...).
BANK_ERROR_CODE = 4000
# Error code of a bank that refuses to train because its privacy budget is spent: the operator
# goes on without it (results.json privacy.halted_banks) while min-banks remain.
BUDGET_ERROR_CODE = 4001

# Stage announcement (operator -> banks), in every message: ConfigRecord {RUN: str, STAGE_NAME:
# str, PARTICIPANTS: [bank ids]}. The run label and participant set are what banks sign over.
STAGE = "stage"
RUN = "run"
STAGE_NAME = "name"
PARTICIPANTS = "participants"
TRAIN_STAGE = "train"  # stage name of a training round (STATS is the statistics stage)


def evaluation_stage(split: str) -> str:
    """Stage name of an evaluation on `split`: val and test of the same round are two stages,
    so pairwise masks and signatures are never reused across them."""
    return f"evaluate.{split}"


# A bank's reply carries in its BANK record the SHA-256 of its payload (Payload.to_bytes())
# and its Ed25519 signature over secure_agg.roster.statement(run, round, stage, digest,
# participants).
DIGEST = "digest"
SIGNATURE = "signature"
# Beside each aggregate (SCALER, GLOBAL) the operator forwards "<key>.proof": ConfigRecord
# {RUN, ROUND, STAGE_NAME, PARTICIPANTS, "banks": [...], "digests": [...], "signatures": [...]}
# and, for backends whose sum a bank can recompute, "<key>.contribution.<bank>": each signed
# contribution's Payload record.
PROOF_SUFFIX = ".proof"
CONTRIBUTION_INFIX = ".contribution."
PROOF_BANKS = "banks"
PROOF_DIGESTS = "digests"
PROOF_SIGNATURES = "signatures"
# A bank that refuses a message (policy, roster, verification) answers this code and nothing
# else; why stays in the bank's log.
REFUSED_ERROR_CODE = 4002
