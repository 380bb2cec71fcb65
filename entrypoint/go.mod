module github.com/trialforge/trialforge/entrypoint

// 1.19: Debian bookworm's golang-go, which the operator image's build stage uses.
go 1.19
