-- embed.lua: turns a Lua source file into a C array so the binary carries its default script.
-- usage: luajit scripts/embed.lua NAME IN.lua OUT.c
local name, inpath, outpath = arg[1], arg[2], arg[3]
local src = assert(io.open(inpath, "rb")):read("*a")
local out = assert(io.open(outpath, "wb"))
out:write("/* generated from ", inpath, " by scripts/embed.lua; do not edit */\n")
out:write("#include <stddef.h>\n")
out:write("const char ", name, "[] = {\n")
for i = 1, #src, 16 do
  local row = {}
  for j = i, math.min(i + 15, #src) do row[#row + 1] = tostring(src:byte(j)) end
  out:write("  ", table.concat(row, ","), ",\n")
end
out:write("  0};\n")
out:write("const size_t ", name, "_len = ", #src, ";\n")
out:close()
