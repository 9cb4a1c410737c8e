// labdeploy: the vCenter simulator the vSphere tests talk to (tests/integration/vcsim_fixtures.py),
// our own small main around github.com/vmware/govmomi/simulator (main.go).
module labdeploy.invalid/vcsim

go 1.26

require github.com/vmware/govmomi v0.18.0

require github.com/google/uuid v1.6.0 // indirect
