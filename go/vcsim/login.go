package main

// govmomi's simulator at v0.18.0 accepts any user name and password. With -password the Login
// method refuses any other password as vCenter does: an InvalidLogin fault (the one pyvmomi raises
// as vim.fault.InvalidLogin), so a wrong password can be tested. The password itself is never logged.

import (
	"encoding/xml"
	"net/http"
)

type loginRequest struct {
	Password string `xml:"Body>Login>password"`
}

const invalidLogin = `<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
<soapenv:Body><soapenv:Fault><faultcode>ServerFaultCode</faultcode>
<faultstring>Cannot complete login due to an incorrect user name or password.</faultstring>
<detail><InvalidLoginFault xmlns="urn:vim25" xsi:type="InvalidLogin"></InvalidLoginFault></detail>
</soapenv:Fault></soapenv:Body></soapenv:Envelope>`

// refusedLogin answers a Login whose password is not want with InvalidLogin; false lets it through.
func refusedLogin(w http.ResponseWriter, body []byte, want string) bool {
	var req loginRequest
	if want == "" || (xml.Unmarshal(body, &req) == nil && req.Password == want) {
		return false
	}
	w.Header().Set("Content-Type", "text/xml; charset=utf-8")
	w.WriteHeader(http.StatusInternalServerError)
	_, _ = w.Write([]byte(invalidLogin))
	return true
}
