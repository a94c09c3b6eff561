console.log("is-number", require("is-number")(5));
