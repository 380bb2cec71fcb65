-- Argo CD resource health check for trialforge.io/Experiment.
--
-- Healthy     status.phase Succeeded
-- Progressing status.phase Pending or Running; no status yet; or the operator
--             has not yet observed the latest spec (observedGeneration)
-- Suspended   status.phase Suspended (spec.suspend is true: no new trials)
-- Degraded    status.phase Failed, or the condition SpecValid is False (the
--             operator refused the spec; running trials are kept)
-- Unknown     any other phase
--
-- Install it under resource.customizations.health.trialforge.io_Experiment in
-- argocd-cm (see docs/gitops.md). Argo CD gives the object as the global `obj`.
-- Tested by tests/unit/test_gitops.py, which runs this file with lupa.

local hs = { status = "Progressing", message = "Waiting for the Trialforge operator" }

local function counts(st)
  local t = st.trials
  if t == nil then
    return ""
  end
  local done = (t.succeeded or 0) + (t.failed or 0) + (t.pruned or 0) + (t.cancelled or 0)
  local text = string.format("%d running, %d pending, %d done", t.running or 0, t.pending or 0, done)
  if (t.failed or 0) > 0 then
    text = text .. string.format(" (%d failed)", t.failed)
  end
  return text
end

local function best(st)
  if st.best ~= nil and st.best.trial ~= nil and st.bestValue ~= nil then
    return string.format("; best %s = %.6g", st.best.trial, st.bestValue)
  end
  return ""
end

local function describe(st, fallback)
  local parts = {}
  if st.message ~= nil and st.message ~= "" then
    table.insert(parts, st.message)
  elseif fallback ~= nil then
    table.insert(parts, fallback)
  end
  local c = counts(st)
  if c ~= "" then
    table.insert(parts, c)
  end
  return table.concat(parts, "; ") .. best(st)
end

if obj.status == nil then
  return hs
end
local st = obj.status

if st.conditions ~= nil then
  for _, c in ipairs(st.conditions) do
    if c.type == "SpecValid" and c.status == "False" then
      hs.status = "Degraded"
      hs.message = "Invalid spec: " .. (c.message or c.reason or "")
      return hs
    end
  end
end

local generation = obj.metadata ~= nil and obj.metadata.generation or nil
if generation ~= nil and st.observedGeneration ~= nil and st.observedGeneration < generation then
  hs.message = string.format("Waiting for the operator to observe generation %d (at %d)",
    generation, st.observedGeneration)
  return hs
end

local phase = st.phase
if phase == "Succeeded" then
  hs.status = "Healthy"
  hs.message = describe(st, "Succeeded")
elseif phase == "Failed" then
  hs.status = "Degraded"
  hs.message = describe(st, "Failed")
elseif phase == "Suspended" then
  hs.status = "Suspended"
  hs.message = describe(st, "Suspended")
elseif phase == "Pending" or phase == "Running" or phase == nil then
  hs.status = "Progressing"
  hs.message = describe(st, phase or "Pending")
else
  hs.status = "Unknown"
  hs.message = "Unknown phase " .. tostring(phase)
end
return hs
