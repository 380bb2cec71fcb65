// The real node's sandbox ("pause") image: a static binary that blocks until TERM/INT.
module trialforge.local/e2e/tools/pause

go 1.26.0
