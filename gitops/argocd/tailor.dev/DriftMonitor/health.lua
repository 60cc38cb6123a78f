-- Argo CD health of a tailor.dev DriftMonitor. The monitor is Healthy while its checks run and
-- its model is fine; Progressing while it waits for its first check or retrains the model;
-- Degraded when it cannot check (Stalled, Ready False) or the model is failing in production
-- (accuracy below the threshold, or drift), so the Application shows the model's trouble.
local hs = {}

local function condition(conditions, kind)
  for _, c in ipairs(conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

local function is_true(c)
  return c ~= nil and c.status == "True"
end

local function explain(c, fallback)
  if c.message ~= nil and c.message ~= "" then
    return c.reason .. ": " .. c.message
  end
  if c.reason ~= nil and c.reason ~= "" then
    return c.reason
  end
  return fallback
end

local status = obj.status
if status == nil or status.conditions == nil or #status.conditions == 0 then
  hs.status = "Progressing"
  hs.message = "Waiting for the Tailor operator to reconcile the DriftMonitor"
  return hs
end
local generation = obj.metadata.generation
if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. generation
  return hs
end

local conditions = status.conditions
local stalled = condition(conditions, "Stalled")
if is_true(stalled) then
  hs.status = "Degraded"
  hs.message = explain(stalled, "The operator cannot check this monitor")
  return hs
end
local retraining = condition(conditions, "Retraining")
if is_true(retraining) then
  hs.status = "Progressing"
  hs.message = explain(retraining, "Retraining the model")
  return hs
end
local ready = condition(conditions, "Ready")
if ready ~= nil and ready.status == "False" then
  hs.status = "Degraded"
  hs.message = explain(ready, "The last check failed")
  return hs
end
local accuracy = condition(conditions, "AccuracyBelowThreshold")
if is_true(accuracy) then
  hs.status = "Degraded"
  hs.message = explain(accuracy, "The model's metric is below its threshold")
  return hs
end
local drift = condition(conditions, "DriftDetected")
if is_true(drift) then
  hs.status = "Degraded"
  hs.message = explain(drift, "Production data drifted from the training profile")
  return hs
end
if is_true(ready) then
  hs.status = "Healthy"
  hs.message = explain(ready, "The last check passed")
  return hs
end
hs.status = "Progressing"
hs.message = "Waiting for the first check"
return hs
