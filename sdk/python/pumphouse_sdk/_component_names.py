"""The generated binding types `_glue` uses: the names both `wit`
namespaces (`_component.WIT`, `testing.WIT`) provide."""

TYPES = (
    "Encoding",
    "Schema",
    "PluginInfo",
    "Event",
    "Batch",
    "FailedEvent",
    "WriteError_Retry",
    "WriteError_Partial",
    "WriteError_InvalidBatch",
    "WriteError_TooLarge",
    "WriteError_Fatal",
    "Verdict_KeepAll",
    "Verdict_Keep",
    "Verdict_Replace",
)
