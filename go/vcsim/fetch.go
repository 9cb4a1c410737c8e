package main

// pyvmomi 8.0.1 and later read a managed object's property with the vim25 method Fetch(prop),
// which govmomi's simulator at v0.18.0 does not know. fetched answers it by asking the simulator's
// own PropertyCollector (RetrievePropertiesEx for that one property) and returning the value it
// reports as a FetchResponse; nothing else about the simulator changes.

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"net/http"
	"net/http/httptest"
	"regexp"
)

type fetchRequest struct {
	This struct {
		Type  string `xml:"type,attr"`
		Value string `xml:",chardata"`
	} `xml:"Body>Fetch>_this"`
	Prop string `xml:"Body>Fetch>prop"`
}

const retrieveTemplate = `<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
<soapenv:Body><RetrievePropertiesEx xmlns="urn:vim25"><_this type="PropertyCollector">propertyCollector</_this>
<specSet><propSet><type>%[1]s</type><pathSet>%[3]s</pathSet></propSet><objectSet><obj type="%[1]s">%[2]s</obj></objectSet></specSet>
<options></options></RetrievePropertiesEx></soapenv:Body></soapenv:Envelope>`

var valElement = regexp.MustCompile(`(?s)<val( [^>]*)?>(.*)</val>`)

func fetched(w http.ResponseWriter, r *http.Request, body []byte, next http.Handler) {
	var req fetchRequest
	if err := xml.Unmarshal(body, &req); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var esc bytes.Buffer
	_ = xml.EscapeText(&esc, []byte(req.This.Value))
	inner := fmt.Sprintf(retrieveTemplate, req.This.Type, esc.String(), req.Prop)
	sub := r.Clone(r.Context())
	sub.Body = http.NoBody
	sub.Body = readCloser(inner)
	sub.ContentLength = int64(len(inner))
	rec := httptest.NewRecorder()
	next.ServeHTTP(rec, sub)
	out := rec.Body.Bytes()
	if bytes.Contains(out, []byte("<soapenv:Fault>")) {
		w.WriteHeader(rec.Code)
		_, _ = w.Write(out)
		return
	}
	returnval := "" // an unset property: no returnval, which pyvmomi reads as None
	if m := valElement.FindSubmatch(out); m != nil {
		returnval = fmt.Sprintf("<returnval%s>%s</returnval>", m[1], m[2])
	}
	w.Header().Set("Content-Type", "text/xml; charset=utf-8")
	_, _ = fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenc="http://schemas.xmlsoap.org/soap/encoding/" xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body><FetchResponse xmlns="urn:vim25">%s</FetchResponse></soapenv:Body></soapenv:Envelope>`, returnval)
}
