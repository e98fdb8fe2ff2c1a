-- Orthanc routing script: forward each stable breast imaging study to the Breast AI Node.
--
-- Orthanc calls OnStableStudy once no instance has arrived for a study during
-- "StableAge" seconds. The script then sends the study's images to the node and
-- marks each one as forwarded, so a study that becomes stable again (late images, or
-- the node's own results arriving) only sends what the node has not had yet.
--
-- Only images are forwarded, chosen by SOP class; the node's results (Structured
-- Reports, Mammography CAD SR, Secondary Captures, presentation states) are never in
-- that list, and instances that the node itself sent (Orthanc's "RemoteAET" metadata)
-- are skipped as well, so results never loop back to the node.
--
-- Settings come from the "BreastAI" section of the Orthanc configuration (see
-- orthanc.json next to this file); nothing in this script needs editing:
--   "BreastAI" : {
--     "Modality" : "breast-ai",           -- the entry in DicomModalities
--     "NodeAet" : "BREAST_AI",            -- its AE title (instances it sent are skipped)
--     "SopClasses" : [ "1.2.840..." ]     -- optional; default: MG For Presentation, US
--   }
-- It also needs "UserMetadata" : { "BreastAIForwarded" : 4242 } (any free number
-- from 1024 up), where the forwarded mark is kept across restarts.

local DEFAULT_SOP_CLASSES = {
  "1.2.840.10008.5.1.4.1.1.1.2",  -- Digital Mammography X-Ray Image Storage - For Presentation
  "1.2.840.10008.5.1.4.1.1.6.1",  -- Ultrasound Image Storage
}
local FORWARDED = "BreastAIForwarded"

local function Settings()
  local config = GetOrthancConfiguration()["BreastAI"] or {}
  local classes = {}
  for _, uid in ipairs(config["SopClasses"] or DEFAULT_SOP_CLASSES) do
    classes[uid] = true
  end
  return {
    modality = config["Modality"] or "breast-ai",
    aet = config["NodeAet"] or "BREAST_AI",
    classes = classes,
  }
end

local function Metadata(instanceId)
  return ParseJson(RestApiGet("/instances/" .. instanceId .. "/metadata?expand"))
end

function OnStableStudy(studyId, tags, metadata)
  local settings = Settings()
  local selected = {}
  for _, instance in ipairs(ParseJson(RestApiGet("/studies/" .. studyId .. "/instances"))) do
    local meta = Metadata(instance["ID"])
    if settings.classes[meta["SopClassUid"] or ""]
        and meta["RemoteAET"] ~= settings.aet
        and meta[FORWARDED] == nil then
      table.insert(selected, instance["ID"])
    end
  end
  if #selected == 0 then
    return
  end
  print("BreastAI: forwarding " .. #selected .. " instance(s) of study " .. studyId
        .. " to " .. settings.modality)
  -- synchronous: returns once the node acknowledged every instance (or raises)
  local ok, err = pcall(RestApiPost, "/modalities/" .. settings.modality .. "/store",
                        DumpJson({ Resources = selected, Synchronous = true }, true))
  if not ok then
    print("BreastAI: forwarding study " .. studyId .. " failed: " .. tostring(err))
    return
  end
  for _, id in ipairs(selected) do
    RestApiPut("/instances/" .. id .. "/metadata/" .. FORWARDED, "yes")
  end
end
