# A test that always fails with MESSAGE: it stands in for a listed test whose source file is missing.
#   cmake -DMESSAGE=... -P grphi-fail.cmake
message(FATAL_ERROR "${MESSAGE}")
