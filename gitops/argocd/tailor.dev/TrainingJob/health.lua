-- Argo CD health of a tailor.dev TrainingJob, read from its conditions the way Argo CD reads a
-- batch/v1 Job: Succeeded is Healthy, Failed is Degraded, Suspended is Suspended, anything else
-- (waiting for the operator, pending, running, restarting) is Progressing. A job that Kueue has
-- not admitted yet is Suspended too (reason Queued), as Argo CD shows a queued Job.
local hs = {}

local function condition(conditions, kind)
  for _, c in ipairs(conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
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
  hs.message = "Waiting for the Tailor operator to reconcile the TrainingJob"
  return hs
end
local generation = obj.metadata.generation
if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. generation
  return hs
end

local conditions = status.conditions
local failed = condition(conditions, "Failed")
if failed ~= nil and failed.status == "True" then
  hs.status = "Degraded"
  hs.message = explain(failed, "The TrainingJob failed")
  return hs
end
local succeeded = condition(conditions, "Succeeded")
if succeeded ~= nil and succeeded.status == "True" then
  hs.status = "Healthy"
  hs.message = explain(succeeded, "The TrainingJob succeeded")
  return hs
end
local stalled = condition(conditions, "Stalled")
if stalled ~= nil and stalled.status == "True" then
  -- Not terminal, but the operator cannot go on without a change (e.g. SecretNotFound).
  hs.status = "Degraded"
  hs.message = explain(stalled, "The operator cannot make progress")
  return hs
end
local suspended = condition(conditions, "Suspended")
if suspended ~= nil and suspended.status == "True" then
  hs.status = "Suspended"
  hs.message = explain(suspended, "The TrainingJob is suspended")
  return hs
end

hs.status = "Progressing"
local reconciling = condition(conditions, "Reconciling")
local message = "The TrainingJob is in progress"
if reconciling ~= nil and reconciling.status == "True" then
  message = explain(reconciling, message)
end
if status.progress ~= nil and status.progress.summary ~= nil then
  message = message .. " (" .. status.progress.summary .. ")"
end
hs.message = message
return hs
