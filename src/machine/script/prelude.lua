-- The Lua half of the sandbox a script runs in (the Rust half is sandbox.rs).
-- It runs once in every fresh Lua state, before the script, with `native`:
-- the Rust functions (redis.call's dispatcher, sha1, the PRNG, the bit and
-- cjson libraries...). It returns the environment the script runs in and the
-- function that runs it.
--
-- What it keeps true, and why:
-- * A stopped script stays stopped. When the instruction budget is spent,
--   the count hook raises an error every time it fires; pcall, xpcall and
--   coroutine.resume are wrapped so that they raise it again instead of
--   catching it, so `while true do pcall(f) end` ends too.
-- * Nothing in a reply or a write depends on where this replica's allocator
--   put a table: tostring() of a table, function or coroutine says
--   "table: 0x00000001", numbered in the order the script asked, not its
--   address. (`pairs` over a table keyed by tables still visits them in
--   address order: see notes/findings.md.)
-- * Redis 7's rules for globals: reading an undefined one is an error, and
--   globals and the libraries are read-only ("Attempt to modify a readonly
--   table"). A fresh state per run already keeps one script from seeing
--   another's globals; these rules are kept so scripts behave as on Redis.
-- * Redis 7's redis.* API, in Redis's words for each error.
local native = ...

-- What the sandbox itself uses, taken before the script can touch anything.
local error, type, select, rawget = error, type, select, rawget
local pairs, ipairs, getmetatable, setfenv = pairs, ipairs, getmetatable, setfenv
local raw_setmetatable, raw_rawset, raw_tostring = setmetatable, rawset, tostring
local raw_pcall, raw_xpcall, raw_loadstring = pcall, xpcall, loadstring
local co_create, co_resume, co_running, co_status, co_wrap, co_yield =
  coroutine.create, coroutine.resume, coroutine.running, coroutine.status,
  coroutine.wrap, coroutine.yield
local concat, string_format = table.concat, string.format

local function refuse()
  error('Attempt to modify a readonly table', 2)
end

-- Tables a script may read but not change (weak keys: this is only a mark).
local readonly = raw_setmetatable({}, { __mode = 'k' })

-- What getmetatable() answers for a read-only table: itself read-only.
local sealed = {}
raw_setmetatable(sealed, { __newindex = refuse, __metatable = sealed })
readonly[sealed] = true

local function readonly_view(real)
  local view = raw_setmetatable({}, { __index = real, __newindex = refuse, __metatable = sealed })
  readonly[view] = true
  return view
end

-- The Rust functions (redis.call, bit, cjson...) are called directly, not
-- through Lua wrappers: `return redis.call(...)` is a tail call, and a Lua
-- wrapper would take the script's place on the stack, so an error could no
-- longer say which line of the script called. They raise errors as Rust
-- values; `native.as_lua_error` gives what Redis would have raised instead:
-- its error table ({err=...}) for a redis.call error, the message for others.

-- What a protected call hands on: the stop raised again if the script has
-- been stopped (see the top of this file), Redis's form of the error if not.
local function protected_result(ok, ...)
  if native.stopped() then
    error(native.stop_error(), 0)
  end
  if ok then
    return ok, ...
  end
  return false, native.as_lua_error((...))
end

-- Redis 7's pcall gives the text of a redis.call error, not its table.
local function pcall_result(ok, ...)
  if ok or native.stopped() then
    return protected_result(ok, ...)
  end
  local _, err = protected_result(ok, ...)
  if type(err) == 'table' then
    local text = rawget(err, 'err')
    if type(text) == 'string' then
      return false, text
    end
  end
  return false, err
end

-- Numbering for tostring() (see the top of this file).
local ids = raw_setmetatable({}, { __mode = 'k' })
local next_id = 0
local addressed = { table = true, ['function'] = true, thread = true, userdata = true }

local function numbered_tostring(value)
  local kind = type(value)
  if addressed[kind] and not native.has_tostring(value) then
    local id = ids[value]
    if id == nil then
      next_id = next_id + 1
      id = next_id
      ids[value] = id
    end
    return string_format('%s: 0x%08x', kind, id)
  end
  return raw_tostring(value)
end

-- loadstring and load compile text only: bytecode can crash the VM.
local function text_loadstring(chunk, name)
  if type(chunk) == 'string' and chunk:byte(1) == 27 then
    return nil, 'loading bytecode is not allowed'
  end
  return raw_loadstring(chunk, name)
end

local function text_load(reader, name)
  local parts = {}
  while true do
    local part = reader()
    if part == nil or part == '' then
      break
    end
    if type(part) ~= 'string' then
      return nil, 'reader function must return a string'
    end
    parts[#parts + 1] = part
  end
  return text_loadstring(concat(parts), name)
end

local redis = {
  call = native.call,
  pcall = native.pcall,
  sha1hex = native.sha1hex,
  error_reply = function(...)
    local text = ...
    if select('#', ...) ~= 1 or type(text) ~= 'string' then
      return { err = 'ERR wrong number or type of arguments' }
    end
    if text:sub(1, 1) ~= '-' then
      text = '-' .. text
    end
    return { err = native.error_text(text) }
  end,
  status_reply = function(...)
    local text = ...
    if select('#', ...) ~= 1 or type(text) ~= 'string' then
      return { err = 'ERR wrong number or type of arguments' }
    end
    return { ok = text }
  end,
  log = native.log,
  setresp = native.setresp,
  -- Redis 7 replicates a script's effects; here every replica runs the
  -- script itself, so there is nothing to choose. Kept so scripts written
  -- for older Redis run unchanged.
  replicate_commands = function()
    return true
  end,
  set_repl = function(...)
    local flags = ...
    if select('#', ...) ~= 1 then
      error({ err = 'ERR redis.set_repl() requires two arguments.' }, 0)
    end
    if type(flags) ~= 'number' or flags < 0 or flags > 3 or flags % 1 ~= 0 then
      error({ err = 'ERR Invalid replication flags. Use REPL_AOF, REPL_REPLICA, REPL_ALL or REPL_NONE.' }, 0)
    end
  end,
  -- The debugger (SCRIPT DEBUG) is not served: these do nothing, as in Redis
  -- when no debugging session is open.
  breakpoint = function()
    return false
  end,
  debug = function() end,
  LOG_DEBUG = 0,
  LOG_VERBOSE = 1,
  LOG_NOTICE = 2,
  LOG_WARNING = 3,
  REPL_NONE = 0,
  REPL_AOF = 1,
  REPL_SLAVE = 2,
  REPL_REPLICA = 2,
  REPL_ALL = 3,
  REDIS_VERSION = native.redis_version,
  REDIS_VERSION_NUM = native.redis_version_num,
}

-- Redis's own math.random and math.randomseed (rand48: the same sequence
-- on every machine, restarted before every run).
local math_lib = {}
for name, f in pairs(math) do
  math_lib[name] = f
end
math_lib.random = native.random
math_lib.randomseed = native.randomseed

local coroutine_lib = {
  create = co_create,
  resume = function(...)
    return protected_result(co_resume(...))
  end,
  running = co_running,
  status = co_status,
  wrap = co_wrap,
  yield = co_yield,
}

-- String patterns matched in Rust, every step counted (see pattern.rs). Set
-- in the real string table: ("x"):find() reaches it through the strings'
-- metatable.
raw_rawset(string, 'find', native.find)
raw_rawset(string, 'match', native.match)
raw_rawset(string, 'gmatch', native.gmatch)
raw_rawset(string, 'gsub', native.gsub)

-- The globals. Everything a script may name is here; what Redis leaves out
-- (dofile, loadfile, print, and the os, io, package and debug libraries,
-- which this state never loads) is absent, and so is newproxy (its __gc
-- would run whenever the collector chooses).
local G = getfenv(0)
for _, name in ipairs({ 'dofile', 'loadfile', 'print', 'newproxy', 'module', 'require' }) do
  raw_rawset(G, name, nil)
end
local env = readonly_view(G)
readonly[G] = true
raw_rawset(G, '_G', env)
raw_rawset(G, 'pcall', function(f, ...)
  return pcall_result(raw_pcall(f, ...))
end)
raw_rawset(G, 'xpcall', function(f, handler)
  return protected_result(raw_xpcall(f, function(err)
    return handler(native.as_lua_error(err))
  end))
end)
raw_rawset(G, 'tostring', numbered_tostring)
raw_rawset(G, 'unpack', native.unpack)
raw_rawset(G, 'loadstring', text_loadstring)
raw_rawset(G, 'load', text_load)
raw_rawset(G, 'setmetatable', function(t, mt)
  if readonly[t] then
    error('Attempt to modify a readonly table', 2)
  end
  return raw_setmetatable(t, mt)
end)
raw_rawset(G, 'rawset', function(t, k, v)
  if readonly[t] then
    error('Attempt to modify a readonly table', 2)
  end
  return raw_rawset(t, k, v)
end)
raw_rawset(G, 'redis', readonly_view(redis))
raw_rawset(G, 'math', readonly_view(math_lib))
raw_rawset(G, 'string', readonly_view(string))
raw_rawset(G, 'table', readonly_view(table))
raw_rawset(G, 'coroutine', readonly_view(coroutine_lib))
raw_rawset(G, 'bit', readonly_view(native.bit))
raw_rawset(G, 'cjson', readonly_view(native.cjson))
raw_rawset(G, 'cmsgpack', readonly_view(native.cmsgpack))
raw_rawset(G, 'KEYS', native.keys)
raw_rawset(G, 'ARGV', native.args)
-- ("a"):upper() finds string functions through the strings' metatable,
-- which getmetatable('') would otherwise hand out to be changed.
raw_rawset(getmetatable(''), '__metatable', sealed)

-- Reading a global that does not exist is an error, as in Redis 7.
raw_setmetatable(G, {
  __index = function(_, name)
    error("Script attempted to access nonexistent global variable '" .. raw_tostring(name) .. "'", 2)
  end,
  __newindex = refuse,
  __metatable = sealed,
})

-- Runs the script, its errors turned into Redis's error tables by the handler.
local function run(script)
  setfenv(script, env)
  return raw_xpcall(script, native.handler)
end

return run
