-- The Lua half of provium's test environment, run once in every fresh Lua state
-- before the test file.  It receives `PY`, a table of Python helpers, as its
-- chunk argument and returns a table of Lua helpers the Python side drives.
--
-- Everything the user can reach is a global defined here (`test`, `todo`,
-- `wait_until`, `_provium_*`); the helpers provium itself needs are kept in
-- locals, so a test that overwrites `error` or `pcall` cannot break them.

local PY = ...

local error, pcall, type, tostring, tonumber, select, pairs, setmetatable, getmetatable, load =
      error, pcall, type, tostring, tonumber, select, pairs, setmetatable, getmetatable, load
local pack, unpack, concat, insert = table.pack, table.unpack, table.concat, table.insert
local sfind, sformat, smatch = string.find, string.format, string.match
local dgetinfo, dsethook, dgetmetatable = debug.getinfo, debug.sethook, debug.getmetatable
local co_create, co_wrap = coroutine.create, coroutine.wrap
local spack, sunpack = string.pack, string.unpack
local collectgarbage = collectgarbage

local SKIP = "__PROVIUM_SKIP__"
local H = {}  -- returned to Python

-- ---------------------------------------------------------------------------
-- Calling Python.  A Python function returns (true, values...) on success,
-- (false, message) for an error to raise at the caller's line, or (0, message)
-- for an error that already carries its position (a Lua error that passed
-- through Python, e.g. from a callback).
-- ---------------------------------------------------------------------------

local call_py = nil  -- lupa's own __call for Python objects, set by patch_pyobject_meta

function H.wrap(pyfn)
  return function(...)
    local r = pack(call_py(pyfn, ...))
    if r[1] == true then return unpack(r, 2, r.n) end
    if r[1] == false then error(r[2], 2) end  -- at the line that called the method
    error(r[2], 0)
  end
end

-- Render any error value as text (what a failed test reports).
local function errtext(e)
  if type(e) == "string" then return e end
  if type(e) == "number" then return tostring(e) end
  local mt = dgetmetatable(e)
  if mt and mt.__tostring then
    local ok, s = pcall(tostring, e)
    if ok then return s end
  end
  return "(error object is a " .. type(e) .. " value)"
end
H.errtext = errtext

-- Route indexing of Python objects through pcall so a refused access becomes
-- an ordinary Lua error at the user's line instead of a bare Python exception.
function H.patch_pyobject_meta(sample)
  local mt = dgetmetatable(sample)
  local raw_index, raw_newindex = mt.__index, mt.__newindex
  mt.__index = function(obj, key)
    local ok, v = pcall(raw_index, obj, key)
    if ok then return v end
    error(errtext(v), 2)
  end
  mt.__newindex = function(obj, key, value)
    local ok, e = pcall(raw_newindex, obj, key, value)
    if not ok then error(errtext(e), 2) end
  end
  local raw_call = mt.__call
  call_py = raw_call  -- the wrappers call Python directly: they never raise through it
  mt.__call = function(obj, ...)
    local r = pack(pcall(raw_call, obj, ...))
    if r[1] then return unpack(r, 2, r.n) end
    error(errtext(r[2]), 2)
  end
  mt.__metatable = "provium object"  -- getmetatable() from user code sees only this
  mt.__name = "provium object"       -- how Lua names the type in "bad argument" errors
end

-- `lab:pack(fmt, ...)` and `lab.pack(fmt, ...)` both work: a lab passed as
-- the first argument (the colon form) is dropped.
function H.pack(a, ...)
  if type(a) == "userdata" then return spack(...) end
  return spack(a, ...)
end
function H.unpack(a, ...)
  if type(a) == "userdata" then return sunpack(...) end
  return sunpack(a, ...)
end

-- Where a resource is being created: the innermost frame of a test or
-- fixture file, else the first Lua frame.  Returns file, line (or nothing).
function H.creation_site()
  local first_src, first_line
  for level = 2, 40 do
    local info = dgetinfo(level, "Sl")
    if not info then break end
    if info.what ~= "C" and info.currentline and info.currentline > 0 then
      local src = info.source:gsub("^@", "")
      if src:match("%.test%.lua$") or src:match("%.fixture%.lua$") then
        return src, info.currentline
      end
      if not first_src then first_src, first_line = src, info.currentline end
    end
  end
  return first_src, first_line
end

-- The file of the innermost Lua frame that came from a file (for relative
-- host paths in vm:push_file), or nil.
function H.caller_file()
  for level = 2, 40 do
    local info = dgetinfo(level, "S")
    if not info then break end
    if info.what ~= "C" and info.source:sub(1, 1) == "@" then return info.source:sub(2) end
  end
  return nil
end

function H.collect_garbage()
  collectgarbage()
  collectgarbage()
end

-- ---------------------------------------------------------------------------
-- Timeouts.  The hook below is registered for every Lua thread but kept
-- switched off; when a test's time is up the watchdog switches it on from
-- Python (see interrupt.py) and it raises on the next instruction of user code.
-- ---------------------------------------------------------------------------

local timed_out = PY.timed_out
local timeout_message = PY.timeout_message
local thread_started = PY.thread_started
local running = coroutine.running
local PRELUDE_SOURCE = dgetinfo(1, "S").source
local NEVER = 0x7fffffff
local hook = function()
  if timed_out() then
    -- Raise only in user code: the prelude's own frames (the runner's pcall
    -- around the body, the call wrappers) must be able to finish unwinding.
    local info = dgetinfo(2, "S")
    if info and info.source ~= PRELUDE_SOURCE then
      error(timeout_message(), 0)
    end
  end
end

-- Registers `hook` for the running thread (Python switches it off at once)
-- and keeps the thread alive until its scope is forgotten, so the address
-- Python holds stays valid.
local threads = {}      -- thread -> scope tag
local scope_tag = "file"
local function register_thread()
  local co = running()
  dsethook(hook, "", NEVER)
  threads[co] = scope_tag
  thread_started(sformat("%p", co), scope_tag)
end

function H.main_thread()
  dsethook(hook, "", NEVER)
  return sformat("%p", running())
end

function H.set_scope_tag(tag) scope_tag = tag end
function H.forget_threads(tag)
  for co, t in pairs(threads) do
    if t == tag then threads[co] = nil end
  end
end

-- The count hook is how a timed-out test is stopped; a test that replaced it
-- could never be stopped.  Lua keeps one hook per thread, so sharing it is not
-- possible: refuse, saying why.
debug.sethook = function()
  error("debug.sethook is not available in a provium test: the runner's time limits use the hook", 2)
end

coroutine.create = function(f)
  if type(f) ~= "function" then return co_create(f) end
  return co_create(function(...) register_thread() return f(...) end)
end
coroutine.wrap = function(f)
  if type(f) ~= "function" then return co_wrap(f) end
  return co_wrap(function(...) register_thread() return f(...) end)
end

-- ---------------------------------------------------------------------------
-- Loading and running user code.
-- ---------------------------------------------------------------------------

function H.load_chunk(src, chunkname)
  return load(src, chunkname, "t")
end

function H.call(fn, ...)
  local r = pack(pcall(fn, ...))
  if r[1] then return true, unpack(r, 2, r.n) end
  return false, errtext(r[2])
end

-- What error(msg, 2) raised by the Python method being called now would prefix:
-- the first Lua frame outside the prelude (its wrapper and lupa's C frames skipped).
function H.caller_where()
  for level = 2, 40 do
    local info = dgetinfo(level, "Sl")
    if not info then break end
    if info.what ~= "C" and info.source ~= "=provium-prelude" and info.currentline and info.currentline > 0 then
      return info.short_src .. ":" .. info.currentline .. ": "
    end
  end
  return ""
end

-- `where(level)` is what error(msg, level) would prefix: "file:line: ".
local function where(level)
  local info = dgetinfo(level + 1, "Sl")
  if info and info.currentline and info.currentline > 0 then
    return info.short_src .. ":" .. info.currentline .. ": "
  end
  return ""
end

-- ---------------------------------------------------------------------------
-- test() / todo()
-- ---------------------------------------------------------------------------

local tests = {}     -- in declaration order: {name=, meta=, fn=, where=}
local names = {}
local file_skip = nil
local current = nil  -- name of the running test, or nil

function test(name, a, b)
  if current ~= nil then
    error("test: cannot declare test `" .. tostring(name) .. "` inside the running test `" ..
          current .. "` (declare every test at file level)", 2)
  end
  local meta, fn
  if type(a) == "function" and b == nil then
    meta, fn = {}, a
  elseif type(a) == "table" and type(b) == "function" then
    meta, fn = a, b
  elseif a == nil and type(b) == "function" then
    meta, fn = {}, b
  else
    error("test(name, [meta,] fn): bad arguments (got " .. type(name) .. ", " .. type(a) ..
          ", " .. type(b) .. ")", 2)
  end
  if type(name) ~= "string" then
    error("test(name, [meta,] fn): name must be a string, got " .. type(name), 2)
  end
  if names[name] then
    error("test: duplicate name `" .. name .. "` in this file", 2)
  end
  names[name] = true
  -- `where`: the declaration's "file:line: ", for errors found later in its meta
  insert(tests, {name = name, meta = meta, fn = fn, where = where(2)})
end

function todo(reason)
  if reason ~= nil and type(reason) ~= "string" then
    error("todo(reason): reason must be a string, got " .. type(reason), 2)
  end
  file_skip = reason or "todo"
end

function H.tests() return tests end
function H.file_skip() return file_skip end
function H.set_current(name)
  current = name
  _provium_current_test = name
  _provium_in_test = name ~= nil
end
function _provium_get_tests() return tests end
function _provium_clear_tests() tests = {}; names = {} end
function _provium_file_skipped() return file_skip end
_provium_in_test = false

-- ---------------------------------------------------------------------------
-- The `t` context
-- ---------------------------------------------------------------------------

local T = {}
local Tmeta = {__index = T, __name = "test context"}
Tmeta.__tostring = function(t) return "test_context(" .. t.name .. ")" end

local function check_self(t, m)
  if getmetatable(t) ~= Tmeta then
    error("t:" .. m .. ": call it with a colon, as t:" .. m .. "(...)", 3)
  end
end

-- First failure wins; the message keeps the position of the failing call.
local function mark_fail(t, msg, level)
  if not t._failed then
    t._failed = true
    t._failed_msg = where(level + 1) .. msg
  end
end

function T.assert(t, cond, msg)
  check_self(t, "assert")
  if not cond then
    msg = msg ~= nil and tostring(msg) or "assertion failed"
    mark_fail(t, msg, 2)
    error(msg, 2)
  end
  return cond
end

-- Values in failure messages: strings quoted and escaped ("hi\n"), the rest
-- through tostring; two multi-line strings also get a unified diff.
local function show(v)
  if type(v) == "string" then return PY.quote(v) end
  return tostring(v)
end

local function with_diff(m, a, b)
  if type(a) == "string" and type(b) == "string" then
    local d = PY.diff(a, b)
    if d ~= "" then return m .. "\n" .. d end
  end
  return m
end

function T.assert_eq(t, a, b, msg)
  check_self(t, "assert_eq")
  if a ~= b then
    local m = (msg ~= nil and tostring(msg) or "assert_eq failed") .. ": " .. show(a) .. " ~= " .. show(b)
    m = with_diff(m, a, b)
    mark_fail(t, m, 2)
    error(m, 2)
  end
end

function T.assert_neq(t, a, b, msg)
  check_self(t, "assert_neq")
  if a == b then
    local m = (msg ~= nil and tostring(msg) or "assert_neq failed") .. ": " .. show(a) .. " == " .. show(b)
    mark_fail(t, m, 2)
    error(m, 2)
  end
end

function T.assert_contains(t, hay, needle, msg)
  check_self(t, "assert_contains")
  if type(hay) ~= "string" or type(needle) ~= "string" then
    local m = "assert_contains: both arguments must be strings (got " .. type(hay) .. ", " .. type(needle) .. ")"
    mark_fail(t, m, 2)
    error(m, 2)
  end
  if not sfind(hay, needle, 1, true) then
    local m = (msg ~= nil and tostring(msg) or "assert_contains failed") .. ": " .. show(needle)
              .. " not found in: " .. show(hay)
    mark_fail(t, m, 2)
    error(m, 2)
  end
end

function T.assert_raises(t, fn, msg)
  check_self(t, "assert_raises")
  local mt = dgetmetatable(fn)
  if type(fn) ~= "function" and not (mt and mt.__call) then
    error("t:assert_raises: argument #1 must be a function, got " .. type(fn), 2)
  end
  local saved_failed, saved_msg = t._failed, t._failed_msg
  local ok, err = pcall(fn)
  if ok then
    local m = (msg ~= nil and tostring(msg) or "assert_raises") .. ": expected to raise"
    mark_fail(t, m, 2)
    error(m, 2)
  end
  -- An assertion failing inside fn is the expected raise, not a test failure.
  t._failed, t._failed_msg = saved_failed, saved_msg
  return err
end

function T.fail(t, msg)
  check_self(t, "fail")
  msg = msg ~= nil and tostring(msg) or "explicit failure (t:fail)"
  mark_fail(t, msg, 2)
  error(msg, 2)
end

function T.skip(t, reason)
  check_self(t, "skip")
  if t._outcome ~= "skip" then
    t._outcome = "skip"
    t._skip_reason = reason ~= nil and tostring(reason) or nil
  end
  error(SKIP, 0)
end

function T.log(t, ...)
  check_self(t, "log")
  local n = select("#", ...)
  local parts = {}
  for i = 1, n do parts[i] = tostring((select(i, ...))) end
  insert(t._log, concat(parts, "\t"))
end

function _provium_make_t(name, meta)
  return setmetatable({name = name, meta = meta or {}, _outcome = "pass", _log = {}, _failed = false}, Tmeta)
end
H.make_t = _provium_make_t

-- Run one test body; returns ok, error text.
function H.run_body(fn, t)
  local ok, err = pcall(fn, t)
  if ok then return true, nil end
  return false, errtext(err)
end

function H.outcome(t)
  return t._outcome, t._skip_reason, t._failed, t._failed_msg, t._log
end

H.SKIP = SKIP

-- ---------------------------------------------------------------------------
-- wait_until
-- ---------------------------------------------------------------------------

-- Durations go through the host's one parser (host/values.py), so `wait_until`
-- accepts and refuses exactly what `vm:run{timeout=...}` does.
local py_duration = PY.duration

local function wait_duration(v, field, default)
  if v == nil then return default end
  local ok, secs = py_duration(v, "wait_until: " .. field, default)
  if not ok then error(secs, 3) end
  return secs
end

-- The last value a predicate returned, for the message when it never held.
local function shown(v)
  if type(v) == "string" then
    if #v > 200 then v = v:sub(1, 200) .. "..." end
    return sformat("%q", v)
  end
  return tostring(v)
end

local sleep, now = PY.sleep, PY.now
local WAIT_KEYS = {timeout = true, interval = true, desc = true}

function wait_until(pred, opts)
  local mt = dgetmetatable(pred)
  if type(pred) ~= "function" and not (mt and mt.__call) then
    error("wait_until: argument #1 (predicate) must be a function, got " .. type(pred), 2)
  end
  if opts ~= nil and type(opts) ~= "table" then
    error("wait_until: argument #2 (opts) must be a table, got " .. type(opts), 2)
  end
  opts = opts or {}
  for k in pairs(opts) do
    if not WAIT_KEYS[k] then
      error("wait_until: unknown option `" .. tostring(k) .. "` (valid: desc, interval, timeout)", 2)
    end
  end
  local timeout = wait_duration(opts.timeout, "timeout", 10)
  local interval = wait_duration(opts.interval, "interval", 0.1)
  local desc = opts.desc ~= nil and tostring(opts.desc) or "condition"
  local deadline = now() + timeout
  while true do
    local r = pack(pcall(pred))
    if not r[1] then error(r[2], 0) end
    if r[2] then return r[2] end
    if now() >= deadline then
      local seen = {}
      for i = 2, (r.n > 1 and r.n or 2) do seen[#seen + 1] = shown(r[i]) end
      error("wait_until: " .. desc .. " not met within " .. sformat("%g", timeout) .. "s (last value: "
            .. concat(seen, ", ") .. ")", 2)
    end
    if interval > 0 then sleep(interval) end
  end
end

_provium_sleep = function(secs) sleep(secs) end
_provium_now = now

-- ---------------------------------------------------------------------------
-- Things a test file must not do to the runner process.
-- ---------------------------------------------------------------------------

os.exit = function()
  error("os.exit is not available in a provium test (it would kill the runner); " ..
        "use t:fail() or error() to fail the test", 2)
end

return H
