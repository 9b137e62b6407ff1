-- 02: files in the guest.
--
-- The test reads and writes guest files directly (no `cat`/`echo` needed).
-- Everything happens in a fresh temporary directory so the file also works with
-- `--vmm local`, where "the guest" is this very host.

local vm = provium:vm("files", "linux")
vm:boot()

local made = vm:run("mktemp -d")
made:assert_ok()
local dir = (made.stdout:gsub("%s+$", ""))   -- strip the trailing newline

test("write a file and read it back", function(t)
  vm:write_file(dir .. "/greeting.txt", "hello\n")
  t:assert_eq(vm:read_file(dir .. "/greeting.txt"), "hello\n")
end)

test("programs in the guest see the files the test wrote", function(t)
  vm:write_file(dir .. "/numbers", "3\n1\n2\n")
  local r = vm:run("sort -n " .. dir .. "/numbers")
  r:assert_ok()
  t:assert_eq(r.stdout, "1\n2\n3\n")
end)

test("directories and metadata", function(t)
  vm:mkdir(dir .. "/sub")
  vm:write_file(dir .. "/sub/a", "12345")
  local st = vm:stat(dir .. "/sub/a")
  t:assert_eq(st.size, 5)
  t:assert_eq(st.entry_type, "file")
  local names = {}
  for _, entry in ipairs(vm:listdir(dir .. "/sub")) do
    names[#names + 1] = entry.name
  end
  t:assert_eq(#names, 1)
  t:assert_eq(names[1], "a")
end)

test("binary data survives the round trip", function(t)
  local blob = string.pack("<I4I4", 0xdeadbeef, 0) .. "\0\255\n"
  vm:write_file(dir .. "/blob", blob)
  t:assert_eq(vm:read_file(dir .. "/blob"), blob)
end)

test("reading a missing file is an error you can check", function(t)
  local err = t:assert_raises(function() vm:read_file(dir .. "/does-not-exist") end)
  t:assert_contains(tostring(err), "does-not-exist")
end)

test("clean up", function(t)
  vm:run("rm -rf " .. dir):assert_ok()
end)
