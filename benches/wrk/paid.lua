-- wrk script: every request carries the paid L402 token from $L402_AUTH
-- ("L402 <macaroon>:<preimage>"), so aperture verifies a macaroon per request.
local auth = os.getenv("L402_AUTH")
if auth == nil or auth == "" then
  error("set L402_AUTH to 'L402 <macaroon>:<preimage>'")
end
wrk.headers["Authorization"] = auth
