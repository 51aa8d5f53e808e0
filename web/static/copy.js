// Copies the text of an element to the clipboard when a button with
// data-copy-from="ELEMENT-ID" is clicked. No inline script: the page loads this file.
"use strict";
document.addEventListener("click", function (event) {
  var button = event.target.closest("[data-copy-from]");
  if (!button) { return; }
  var id = button.getAttribute("data-copy-from");
  var source = document.getElementById(id);
  var status = document.querySelector('[data-copy-status="' + id + '"]');
  if (!source) { return; }
  var say = function (text) { if (status) { status.textContent = text; } };
  if (!navigator.clipboard) { say("Your browser does not allow copying here."); return; }
  navigator.clipboard.writeText(source.textContent).then(
    function () { say("Copied."); },
    function () { say("Copying was refused by the browser."); }
  );
});
