// The escalations queue: an answer to assign or resolve whose form is no longer in the page (a live
// update redrew the card, closed, before the answer came back) is swapped against the page itself,
// so its card (sent out of band, with the confirmation) still finds its place. htmx would otherwise
// look for the card next to the detached form and drop the answer (htmx:oobErrorNoTarget). The events
// of a detached form do not reach the document, so the listener sits on the form, set as it posts.
document.addEventListener("htmx:beforeRequest", (event) => {
  const form = event.detail.elt;
  if (!form || !form.closest || !form.closest(".escalation .decide")) return;
  form.addEventListener(
    "htmx:beforeSwap",
    (swap) => {
      if (form.isConnected) return;
      swap.detail.shouldSwap = false;
      htmx.swap(document.body, swap.detail.serverResponse, { swapStyle: "none" });
    },
    { once: true },
  );
});
